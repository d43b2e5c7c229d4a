"""CSI data: COST2100 .mat reader and writer, the synthetic generator, paired UL/DL data."""
