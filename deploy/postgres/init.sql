-- Runs once, on the first start of an empty volume: one database per service,
-- so the compose stack mirrors the distributed (database-per-service) mode.
CREATE DATABASE referrals;
CREATE DATABASE infusions;
CREATE DATABASE therapy;
CREATE DATABASE coordinator;
