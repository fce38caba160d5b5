"""Fault-injection experiments: an experiment file's faults scheduled against a running tree,
its workload driven, its steady state probed and its invariants checked, with reports to read.
"""
