"""The CAMS simulator: a stand-in for the upstream that checks signatures, enforces the per-account
caps, answers from fixtures in the seed pages' shapes, injects latency and faults, and referees
"never over the cap" through ``/__sim/stats``."""
