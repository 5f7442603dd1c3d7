"""Harmless correspondence composed from parts: e-mails, notices and chat messages in which people ask *people*
to do things ("Please make sure to update your records", "Could you send me the slides?"). Hard negatives for
the document head, which otherwise learns "please ..." at the start of a sentence as an instruction to the
model. Split by body sentence: the validation and test splits hold sentences the training split never has.
Written for the firewall from general knowledge of business and personal mail, not from any evaluation set.
"""

from __future__ import annotations

import random

from firewall_data import split_of

GREETINGS = ["Hi {n},", "Hello {n},", "Dear {n},", "Hey {n}!", "Good morning {n},", "Dear customer,",
             "Dear tenant,", "To whom it may concern,", "Hi team,", "Hello everyone,", "{n},", ""]
CLOSINGS = ["Best regards,\n{m}", "Thanks,\n{m}", "Cheers, {m}", "Kind regards,\nThe {o} team", "Thank you!",
            "Sincerely,\n{m}", "See you soon,\n{m}", "Regards,\n{m} ({o})", "-- {m}", ""]
BODY = [
    "Please make sure to update your records accordingly.", "Please note that the office will be closed on Monday.",
    "Could you send me the slides from yesterday's meeting?", "Let me know if you can make it on Friday.",
    "Please find the signed contract attached.", "Kindly confirm your attendance by the end of the week.",
    "Remember to bring your ID to the appointment.", "Please pay the outstanding amount within 14 days.",
    "If you have any questions, just reply to this email.", "Can you review the draft before I send it out?",
    "Don't forget to submit your timesheet by 5 pm.", "Please use the new password policy from next month.",
    "Forward this to anyone on your team who might be interested.", "Call me when you get a chance.",
    "Make sure the door is locked when you leave.", "Please ignore my previous email, the date was wrong.",
    "You can reset your password from the account settings page.", "Click the link below to verify your address.",
    "Your order has been shipped and should arrive on Tuesday.", "The rent will increase by 50 euros from May.",
    "We have moved the meeting to room 4B.", "Send the invoice to accounts@{o}.example, not to me.",
    "Please delete the old files from the shared drive before Friday.", "Book the flights as soon as you can.",
    "Tell Sam I said thanks for the help.", "Please transfer the deposit to the usual account.",
    "Add your availability to the calendar invite.", "Don't share this document outside the company.",
    "Reply to all with your feedback by Thursday.", "Please sign and return the form.",
    "Your subscription renews automatically on the 1st.", "Update the spreadsheet with last week's numbers.",
    "Share the photos from the trip when you have them!", "Please read the attached policy and sign it.",
    "Your package is waiting at the front desk.", "We will need your bank details to process the refund.",
    "Check the attached schedule and tell me if anything is missing.", "Print two copies for the meeting.",
    "Don't worry about the typo, I fixed it.", "Please change the delivery address to the new office.",
    "Unsubscribe at any time using the link at the bottom of this email.", "Pick up the keys from reception.",
    "Visit our website for opening hours.", "Order the catering for twenty people.",
    "Please respond in English or French.", "Write down the reference number for your records.",
    "Invite Maria to the planning session too.", "Cancel my 3 pm appointment, something came up.",
    "Follow the instructions in the manual to reset the router.", "Disregard the second page, it is outdated.",
]
NAMES = ["Anna", "David", "Ms Patel", "Tom", "Lucia", "Mr Okafor", "Jen", "Marco", "Dr Weber", "Priya"]
ORGS = ["Acme", "Northwind", "Blue Harbour", "Greenleaf", "Contoso", "Riverside Dental"]


def letters(split: str, rng: random.Random, n: int) -> list[str]:
    body = [s for s in BODY if split_of("letter:" + s, 15, 30) == split]
    out = []
    for _ in range(n if body else 0):
        name, me, org = rng.choice(NAMES), rng.choice(NAMES), rng.choice(ORGS)
        parts = [rng.choice(GREETINGS), *rng.sample(body, min(len(body), rng.randint(1, 4))), rng.choice(CLOSINGS)]
        sep = rng.choice(["\n", "\n\n", " "])
        out.append(sep.join(p for p in parts if p).replace("{n}", name).replace("{m}", me).replace("{o}", org))
    return out
