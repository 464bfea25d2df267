"""The snapshot cache and the ADS server: versions, bytes, streams, ACK and NACK."""
