"""Outbound campaigns: ``callgate dial`` paces a contact list through the gate.

campaign.py reads and validates the campaign file and its CSVs; hours.py knows when a
callee may be called; ledger.py keeps the campaign's state (at most once, resumable);
placers.py places a call; scheduler.py decides who is called when, from which number;
command.py is the ``callgate dial`` edge.
"""
