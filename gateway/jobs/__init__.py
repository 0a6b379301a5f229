"""Durable asynchronous jobs: capability calls queued by priority, run through the router, retried,
cancelled and watched, exposed as google.longrunning operations."""
