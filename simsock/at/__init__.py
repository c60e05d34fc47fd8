"""Sans-I/O core of simsock: the AT wire protocol of the SIM7028, with no I/O.

Nothing in this package imports asyncio, serial or socket I/O: it turns bytes
from the module into typed events (:mod:`.parser`, :mod:`.events`), builds
validated command lines (:mod:`.commands`), and maps the module's error codes
to ``OSError`` (:mod:`.errors`).
"""
