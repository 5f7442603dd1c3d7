"""Text encoders in plain numpy, shared by the layers above: all-MiniLM-L6-v2's forward pass (minilm.py; the
embeddings of /v1/embeddings and retrieval, aigrid.agents, and the firewall's cascade readers,
aigrid.security.firewall.reader) and BERT's WordPiece tokenizer (wordpiece.py; also the right-sizer's static
prompt embedding, aigrid.rightsize). No torch."""
