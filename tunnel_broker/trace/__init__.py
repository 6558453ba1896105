"""The live trace: an app's events, pushes and webhook deliveries as they happen."""
