# Augmenting declarations for the compiled build only (setup.py; the default where a C compiler exists):
# Cython reads this file beside framing.py and compiles Framer as an extension type, its attributes
# C struct fields instead of instance-dict entries (read+frame of a Postfix line: 14.6k -> 10.9k
# instructions; benchmarks/README.md, "typed compiled framing"). framing.py is unchanged and the
# pure install never reads this file. Types are kept to what each attribute always holds (`str`
# admits None; times stay Python ints: a ns value need not fit a C integer), so the compiled
# module keeps Python's semantics; `public` keeps every attribute readable and writable from Python
# (state.py, tail.py, tests).
cimport cython

cdef class Framer:
    cdef public object stream, clock, year, last_ns, now_ns
    cdef public str default_host, native
    cdef public str _bsd_head, _iso_head, _exim_head, _haraka_head
    cdef public Py_ssize_t _bsd_len
    cdef public object _bsd_ts, _exim_ts, _haraka_ts, _iso_ts
    cdef public str _exim_tz, _haraka_tz, _iso_tz
    cdef public dict _envelopes

    @cython.locals(native=str, head=str, at=Py_ssize_t, end=Py_ssize_t, msg=str, env=tuple,
                   envelopes=dict, c=str)
    cpdef frame(self, str text, object offset)
    cdef _syslog(self, object ts, str host, str prog, object pid, str msg, object offset)
    cdef _native(self, str mta, object ts, object pid, str msg, object offset, bint inferred=*)
