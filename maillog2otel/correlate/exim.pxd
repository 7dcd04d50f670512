# Augmenting declarations for the compiled build only (setup.py), as correlate/postfix.pxd:
# EximCorrelator as an extension type, its attributes C struct fields; exim.py is unchanged and the
# pure install never reads this file. ``public`` keeps every attribute readable and writable from
# Python (state saving, tests); times stay Python ints.
cdef class EximCorrelator:
    cdef public object s, stats, sessions, synthetic, closing, book, recent, now_ns
    cdef public dict by_pid, by_ci, by_addr, synth, entry, _handlers
    cdef public object _closing_q, _synthetic_d, _sessions_d, _synthetic_v, _sessions_v, _messages_v
    cdef public object _idle_ns, _retention_ns

    cpdef feed(self, object ev)
    cpdef _due(self, object now, object out)
    cpdef _pid(self, object ev)
