"""elastiq.labs.analysis: where a workload's time goes (profiling), numeric deviation of attention, fault injection and resilience."""
