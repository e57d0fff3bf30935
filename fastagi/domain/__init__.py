"""The domain: pure types and rules, no I/O and no event loop of their own.

``alarm`` (an alarm's row and its states), ``events`` (history event kinds),
``directory`` (departments, extension patterns, who pages what), ``policy`` (what an
administrator may set, and its bounds), ``rules`` (schedule, announcement, lamps),
``pins`` (PIN hashing). Every other layer may import these; they import nothing of ours
but each other.
"""
