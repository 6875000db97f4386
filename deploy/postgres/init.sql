-- Run once by the postgres image on an empty data volume (docker-entrypoint-initdb.d):
-- one database per shard, and the router's registry. Owner: POSTGRES_USER (tessera).
-- Their schemas are made by the one-shot migrate services, not here.
CREATE DATABASE tessera_shard_0;
CREATE DATABASE tessera_shard_1;
CREATE DATABASE tessera_router;
