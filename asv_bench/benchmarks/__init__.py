"""asv benchmarks of fastbp: see ../README.md."""
