"""Sans-I/O core of simsock: the AT wire protocol of the SIM7028, with no I/O.

Nothing in this package imports asyncio, serial or socket I/O. The parser
turns bytes from the module into typed events (:mod:`.parser`, :mod:`.events`),
the builders make validated command lines (:mod:`.commands`), the error
tables map the module's codes to ``OSError`` (:mod:`.errors`), the note's
limits, escape bytes and result texts live in :mod:`.note` (the virtual
SIM7028 takes them from there too), and the protocol session
(:mod:`.session`) makes every decision of the stack: which line answers
which command, each link's life, resynchronisation and recovery, with time
passed in (see docs/session.md).
"""
