# Augmenting declarations for the compiled build only (setup.py), as correlate/postfix.pxd:
# Outbound as an extension type; Message and Item (slotted dataclasses) stay as they are.
cdef class Outbound:
    cdef public object s, stats, messages, items, windows, swept_ns, _msg

    cpdef feed(self, object ev, object out)
