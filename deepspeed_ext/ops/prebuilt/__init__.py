"""Ops compiled at install time (DS_BUILD_OPS=1) land here, one module per op named
<op>_<cache key>; op_builder loads one only when its key matches the current sources,
flags and torch, and JIT-builds otherwise."""
