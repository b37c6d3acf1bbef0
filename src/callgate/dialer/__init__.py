"""Outbound campaigns: ``callgate dial`` paces a contact list through the gate.

campaign.py reads and validates the campaign file and its CSVs; hours.py knows when a
callee may be called; ledger.py keeps the campaign's state (at most once, resumable);
shared.py is what the gate and the dialler share through that state file; placers.py
places a call (dry run, or Twilio); inbox.py waits for a provider's results through the
gate; pacing.py judges abandonment and pauses the campaign; headroom.py picks the caller
number; scheduler.py decides who is called when; events.py writes ``--events``;
command.py is the ``callgate dial`` edge.
"""
