"""What every component uses: blocking work off the loop, dynamic batching, optional dependencies, the runner."""
