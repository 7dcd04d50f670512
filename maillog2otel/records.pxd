# Augmenting declarations for the compiled build only (setup.py; the default where a C compiler exists):
# Cython compiles Record, one per log line, as an extension type with its fields in a C struct and
# a compiled __init__ (benchmarks/README.md, "typed compiled framing"). Python-object fields: the
# compiled module keeps Python's semantics. The pure install never reads this file.
cdef class Record:
    cdef public object ts_ns, host, program, pid, message, mta, stream, offset, ts_inferred, cursor
