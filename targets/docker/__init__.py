"""The `docker` runtime: Kafka (KRaft), Redis, PostgreSQL and Toxiproxy as containers on one
user-defined network per run, started through testcontainers (the docker SDK where
testcontainers has no verb), reached by the harness at ports published on 127.0.0.1 only.

- engine.py: where the Docker API is (DOCKER_HOST, /var/run/docker.sock, or the podman
  service that engine.sh provisions on a machine without Docker), and its health;
- images.py: the images a run uses (configuration: the projects' official images by default),
  and `build_local_images`, which makes equivalent images from this machine's own binaries
  when no registry is reachable;
- nodes.py: a node as a container (start, SIGKILL, restart, pause/unpause through the engine);
- runtime.py: `DockerRuntime`, the run's network and labels;
- cleanup.py: removal of everything labelled with a run id (what `onceproof cleanup` uses)."""
