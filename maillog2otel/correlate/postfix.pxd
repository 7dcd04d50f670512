# Augmenting declarations for the compiled build only (setup.py; the default where a C compiler exists), as
# framing.pxd: PostfixCorrelator as an extension type, its attributes C struct fields;
# correlate/postfix.py is unchanged and the pure install never reads this file. Session, Message
# (slotted dataclasses) stay as they are. ``public`` keeps every attribute readable and writable
# from Python (state saving, tests); times stay Python ints.
cimport cython

cdef class PostfixCorrelator:
    cdef public object s, stats, sessions, messages, closing, _closing, screens, handoffs
    cdef public object now_ns, _next_expiry, _ids
    cdef public dict screen_by_addr, client_tls, connects, _relays, _handlers

    @cython.locals(out=list)
    cpdef feed(self, object ev)
    cpdef _session(self, object ev)
    cpdef _message(self, object ev, object out, object create=*)
