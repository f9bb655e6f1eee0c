"""elastiq.analysis: numeric deviation of attention, fault injection and resilience, profiling."""
