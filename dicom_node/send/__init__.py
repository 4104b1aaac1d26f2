"""Send stage: the durable outbox and the C-STORE SCU that delivers results to their destinations."""
