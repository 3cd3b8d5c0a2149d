-- Fills a store schema (created and migrated by `store_bench postgres-read <schema>`) with
-- 10M PDQ signals for the matcher-rebuild timing, much faster than 10M through the fetch
-- path: the same rows as an exchange fetch writes (record, content, signal; the change log
-- through the schema's own triggers), in 20 transactions of 500k.
-- psql -v schema=omm_bench10m -f bench/pg10m.sql
SET search_path = :schema;
INSERT INTO exchange (name, api, config_json, created_at, updated_at)
VALUES ('BENCH', 'fb_threatexchange', '{"privacy_group":1}', 0, 0);
INSERT INTO bank (name, exchange_id, created_at)
SELECT 'BENCH', id, 0 FROM exchange WHERE name = 'BENCH';
SELECT id AS ex_id FROM exchange WHERE name = 'BENCH' \gset
SELECT id AS bank_id FROM bank WHERE name = 'BENCH' \gset
SELECT format($f$
BEGIN;
SELECT pg_advisory_xact_lock(7171, hashtext(current_schema()));
WITH rec AS (
    INSERT INTO exchange_record (exchange_id, fetch_key, metadata_json, updated_at)
    SELECT %1$s, (10000000000 + g)::text,
           '{"opinions":[{"owner":1234,"category":2,"tags":["t"]}]}', 0
    FROM generate_series(%3$s * 500000 + 1, (%3$s + 1) * 500000) g
    RETURNING id, fetch_key),
con AS (
    INSERT INTO bank_content (bank_id, imported_from_id, disable_until_ts, created_at, updated_at)
    SELECT %2$s, id, 1, 0, 0 FROM rec RETURNING id, imported_from_id)
INSERT INTO content_signal (content_id, signal_type, signal_value, bank_id, created_at)
SELECT con.id, 'pdq', md5(rec.fetch_key) || md5(rec.fetch_key || 'x'), %2$s, 0
FROM rec JOIN con ON con.imported_from_id = rec.id;
COMMIT;
$f$, :ex_id, :bank_id, i) FROM generate_series(0, 19) i \gexec
VACUUM ANALYZE;
