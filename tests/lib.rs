//! Holds no code: the tests in this package exercise the platform across services (the
//! readings path end to end, with the binaries as processes) and check the deployment
//! descriptions (`docker-compose.yml`, `k8s/`, `Dockerfile`) against the configuration types.
