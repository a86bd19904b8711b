-- The demo target: a `shop` database with sample data and the roles pgbastion logs in as.
--
-- Run by psql as a superuser connected to any database of the cluster: by the postgres image's
-- entrypoint (this directory is its /docker-entrypoint-initdb.d) and by scripts/demo. The
-- passwords of shop_ro and shop_rw come from the environment variables SHOP_RO_PASSWORD and
-- SHOP_RW_PASSWORD; people never see them, only pgbastion does (sealed in its store).
--
-- Roles: pgbastion logs in upstream as the role a person was granted, so each grantable role is
-- a LOGIN role of its own, and a session cannot switch to another one: neither role is a member
-- of any other, so `SET ROLE shop_rw` in a shop_ro session is refused.
--   shop_ro  LOGIN: SELECT on every table. The target's default login
--            (`pgbastion target add shop --user shop_ro`).
--   shop_rw  LOGIN: SELECT, INSERT, UPDATE, DELETE
--            (`pgbastion target login add shop shop_rw`).

\set ON_ERROR_STOP on
\getenv shop_ro_password SHOP_RO_PASSWORD
\getenv shop_rw_password SHOP_RW_PASSWORD
\if :{?shop_ro_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'shop.sql: set SHOP_RO_PASSWORD (the password pgbastion logs in as shop_ro with)'; END $$;
\endif
\if :{?shop_rw_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'shop.sql: set SHOP_RW_PASSWORD (the password pgbastion logs in as shop_rw with)'; END $$;
\endif

SET password_encryption = 'scram-sha-256';
CREATE ROLE shop_ro LOGIN PASSWORD :'shop_ro_password';
CREATE ROLE shop_rw LOGIN PASSWORD :'shop_rw_password';

CREATE DATABASE shop;
\connect shop

REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON DATABASE shop FROM PUBLIC;
GRANT CONNECT ON DATABASE shop TO shop_ro, shop_rw;
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
