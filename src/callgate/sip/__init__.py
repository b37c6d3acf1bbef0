"""The SIP edge: ``callgate sip`` between a carrier trunk and an agent platform.

    trunk / SBC ──INVITE──▶ callgate sip ──INVITE (+X-Callgate-*)──▶ agent platform
                 ◀─486/480/503 + Retry-After (refused)
                 ◀─182 Queued (on hold, ringback)

Signalling only: media flows between the trunk and the agent directly (the SDP is relayed
untouched), so a crashed edge drops no live audio. The modules, one concept each:
:mod:`.mapping` (an INVITE to a :class:`~callgate.model.Call` and a forward URI),
:mod:`.answers` (a refusal to a SIP final answer), :mod:`.lease` (the lease one dialog
holds, released exactly once), :mod:`.b2bua` (the two call legs on sippy's stack) and
:mod:`.command` (the ``callgate sip`` command). Only :mod:`.b2bua` and :mod:`.command`
import sippy (the ``sip`` extra).
"""
