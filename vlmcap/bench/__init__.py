"""What every benchmark measures with: the one timer, machine probes, FLOP counts, tensor memory, plots of any
report; and the decode benchmark (`vlmcap bench decode`). The stages' benchmarks live with what they measure."""
