# Augmenting declarations for the compiled build only (setup.py), as correlate/postfix.pxd:
# HarakaCorrelator as an extension type, its attributes C struct fields; haraka.py is unchanged and
# the pure install never reads this file. ``public`` keeps every attribute readable and writable
# from Python (state loading, tests); times stay Python ints.
cdef class HarakaCorrelator:
    cdef public object s, stats, conns, _conns_get, closing, closing_due, outbound, now_ns, swept_ns
    cdef public dict held, _handlers
    cdef public set verbose
    cdef public tuple _stream

    cpdef feed(self, object ev)
    cpdef _dispatch(self, object ev, object out)
