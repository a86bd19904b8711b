-- The demo target: a `shop` database with sample data and the roles pgbastion uses.
--
-- Run by psql as a superuser connected to any database of the cluster: by the postgres image's
-- entrypoint (this directory is its /docker-entrypoint-initdb.d) and by scripts/demo. The
-- password of bastion_app comes from the environment variable BASTION_APP_PASSWORD; people never
-- see it, only pgbastion does (sealed in its store).
--
-- Roles:
--   bastion_app  LOGIN, NOINHERIT: the account pgbastion logs in as. On its own it can read
--                nothing; the gateway applies the granted role (the startup `role` setting,
--                which works like SET ROLE), so every session runs as shop_ro or shop_rw.
--   shop_ro      NOLOGIN: SELECT on every table.
--   shop_rw      NOLOGIN: SELECT, INSERT, UPDATE, DELETE.

\set ON_ERROR_STOP on
\getenv bastion_app_password BASTION_APP_PASSWORD
\if :{?bastion_app_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'shop.sql: set BASTION_APP_PASSWORD (the password pgbastion logs in with)'; END $$;
\endif

SET password_encryption = 'scram-sha-256';
CREATE ROLE shop_ro NOLOGIN;
CREATE ROLE shop_rw NOLOGIN;
CREATE ROLE bastion_app LOGIN NOINHERIT PASSWORD :'bastion_app_password' IN ROLE shop_ro, shop_rw;

CREATE DATABASE shop;
\connect shop

REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON DATABASE shop FROM PUBLIC;
GRANT CONNECT ON DATABASE shop TO bastion_app;
GRANT USAGE ON SCHEMA public TO shop_ro, shop_rw;

CREATE TABLE products (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku         text NOT NULL UNIQUE,
    name        text NOT NULL,
    price_cents integer NOT NULL CHECK (price_cents > 0)
);

CREATE TABLE customers (
    id         integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL,
    email      text NOT NULL UNIQUE,
    country    text NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE orders (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers,
    product_id  integer NOT NULL REFERENCES products,
    quantity    integer NOT NULL CHECK (quantity > 0),
    status      text NOT NULL CHECK (status IN ('new', 'paid', 'shipped', 'cancelled')),
    ordered_at  timestamptz NOT NULL
);

-- Deterministic sample data: the same rows on every run.
INSERT INTO products (sku, name, price_cents)
SELECT format('SKU-%s', lpad(i::text, 4, '0')),
       (ARRAY['Mug', 'Notebook', 'Pen', 'Backpack', 'Lamp', 'Chair', 'Desk', 'Headphones',
              'Keyboard', 'Monitor'])[1 + i % 10] || ' ' ||
       (ARRAY['Classic', 'Pro', 'Mini', 'Max', 'Eco'])[1 + i % 5],
       199 + (i * 7919) % 30000
FROM generate_series(1, 50) AS i;

INSERT INTO customers (name, email, country, created_at)
SELECT (ARRAY['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Donald', 'Frances', 'Ken',
              'Margaret', 'Dennis'])[1 + i % 10] || ' ' ||
       (ARRAY['Lovelace', 'Hopper', 'Turing', 'Dijkstra', 'Liskov', 'Knuth', 'Allen',
              'Thompson', 'Hamilton', 'Ritchie', 'Stone'])[1 + i % 11],
       format('customer%s@example.com', i),
       (ARRAY['DE', 'FR', 'US', 'GB', 'JP', 'BR', 'IN', 'NL'])[1 + i % 8],
       timestamptz '2024-01-01 00:00:00+00' + make_interval(hours => i * 37)
FROM generate_series(1, 200) AS i;

INSERT INTO orders (customer_id, product_id, quantity, status, ordered_at)
SELECT 1 + (i * 31) % 200,
       1 + (i * 17) % 50,
       1 + i % 4,
       (ARRAY['new', 'paid', 'paid', 'shipped', 'shipped', 'shipped', 'cancelled'])[1 + i % 7],
       timestamptz '2024-03-01 00:00:00+00' + make_interval(hours => i * 11)
FROM generate_series(1, 500) AS i;

GRANT SELECT ON ALL TABLES IN SCHEMA public TO shop_ro;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO shop_rw;
ANALYZE;
