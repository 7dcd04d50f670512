# Augmenting declarations for the compiled build only (setup.py; the default where a C compiler exists), as
# framing.pxd: Grammar as an extension type, its attributes C struct fields, ``parse`` (once per
# line) with typed locals; parse.py is unchanged and the pure install never reads this file.
# Types only where an attribute always holds exactly that (``str``/``dict``/``set``/``list`` admit
# None); ``public`` keeps every attribute readable and writable from Python (tests read
# ``_prefix_re``, which the extension type has as None where the class leaves it unset).
cimport cython

cdef class Grammar:
    cdef public str mta
    cdef public list rules
    cdef public object fast, rewrite, prefix, _prefix_re, program_key, _read_prefix
    cdef public str _rewrite_firsts
    cdef public set _keys
    cdef public dict _programs, _daemons

    @cython.locals(prog=tuple, table=dict, body=str, candidates=list)
    cpdef parse(self, object rec)
