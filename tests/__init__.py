"""callgate's test suite.

A regular package, not a namespace one: sippy (the ``sip`` extra) installs a top-level
``tests`` package of its own, which would otherwise win every ``from tests... import``.
"""
