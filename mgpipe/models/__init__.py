"""Neural networks of mgpipe: SlowOnly pathways, the fused RGB+pose network, losses."""
