# Augmenting declarations for the compiled build only (setup.py), as correlate/postfix.pxd:
# Aggregator as an extension type; metrics.py is unchanged and the pure install never reads this
# file. ``public`` keeps every attribute readable and writable from Python (the pipeline sets
# ``classify``; parallel._ForwardingAggregator, a Python subclass, adds ``owner``); numbers stay
# Python objects. ``source`` is ``cpdef``: _ForwardingAggregator overrides it, and a cpdef method
# still dispatches to a Python override.
cdef class Aggregator:
    cdef public object interval_ns, namespace, delta, max_series, bucket_end, overflow, time_jumps
    cdef public object classify
    cdef public dict series
    cdef public set sources

    cpdef _series(self, object key, object ts)
    cpdef _observe(self, object key, object ts, object value)
    cpdef connection(self, object c)
    cpdef delivery(self, object d)
    cpdef count(self, object c)
    cpdef source(self, object host, object mta)
