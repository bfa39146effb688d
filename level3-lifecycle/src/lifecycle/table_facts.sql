-- The facts a backup records about each table, and a restore compares:
-- one psql statement generated per user table (run with \gexec), each
-- printing `schema<TAB>table<TAB>rows<TAB>digest`.
--
-- The digest is md5 over the sorted md5s of the rows' text form:
--   md5(coalesce(string_agg(md5(t::text), '' ORDER BY md5(t::text)), ''))
-- so it does not depend on the order rows are stored in. It is taken for
-- tables up to :digest_bytes bytes on disk; larger tables get their row
-- count only (digest empty). A restore computes a digest exactly where the
-- manifest has one, with the same expression.
--
-- Partitions are counted through their parent (relispartition), so no row
-- is counted twice.
SELECT CASE WHEN pg_total_relation_size(c.oid) <= :digest_bytes THEN
         format('SELECT %L, %L, count(*), md5(coalesce(string_agg(md5(t::text), '''' ORDER BY md5(t::text)), '''')) FROM %I.%I AS t',
                n.nspname, c.relname, n.nspname, c.relname)
       ELSE
         format('SELECT %L, %L, count(*), '''' FROM %I.%I',
                n.nspname, c.relname, n.nspname, c.relname)
       END
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%'
  AND n.nspname NOT LIKE 'pg\_temp%'
ORDER BY n.nspname, c.relname
\gexec
