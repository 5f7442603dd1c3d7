"""The AI firewall: prompt-injection detection, personal-data redaction, extraction/abuse signals."""
