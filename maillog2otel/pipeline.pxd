# Augmenting declarations for the compiled build only (setup.py; the default where a C compiler exists), as
# framing.pxd: Pipeline as an extension type, its attributes C struct fields; pipeline.py is
# unchanged and the pure install never reads this file. ``public`` keeps every attribute readable
# and writable from Python (runner, ops, tail, tests; parallel.RemotePipeline, a Python subclass,
# adds its own). ``_outputs`` and ``_advance`` are ``cpdef``: RemotePipeline overrides both, and a
# cpdef method still dispatches to a Python override.
cimport cython

cdef class Pipeline:
    cdef public object settings, span_sink, metric_sink, log_sink, counters, collect_shapes
    cdef public bint traces_on, metrics_on
    cdef public dict stages, _routes
    cdef public object aggregator, _next_bucket, fragments, stitcher
    cdef public set _seen_sources
    cdef public list _pending_spans

    @cython.locals(route=tuple, counts=list)
    cpdef feed(self, object rec, object route=*, object lines=*)
    cpdef _outputs(self, object outs)
    cpdef _advance(self, object ts)
