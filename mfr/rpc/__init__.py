"""The gRPC runtime every service uses: server wiring, interceptors, metrics, clients."""
