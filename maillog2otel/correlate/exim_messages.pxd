# Augmenting declarations for the compiled build only (setup.py), as correlate/postfix.pxd:
# MessageBook as an extension type; Message (a slotted dataclass) stays as it is.
cdef class MessageBook:
    cdef public object s, stats, table
    cdef public dict handlers

    cpdef get(self, object ev)
