//! Holds no code: the tests in this package check the deployment descriptions
//! (`docker-compose.yml`, `k8s/`, `Dockerfile`) against the services' configuration types.
