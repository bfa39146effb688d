-- The autoscaler's load probe, asked of each ready instance while
-- spec.autoscaling is set: one row, every column text.
--   clients  client connections (backend_type 'client backend'); the
--            operator's own sessions (application_name pgdb-operator, this
--            one included) are left out, as the Level 4 collector counts
--   usable   the connections clients may open: max_connections minus
--            superuser_reserved_connections and, from PostgreSQL 16 on,
--            reserved_connections (absent before: read as 0)
SELECT count(*)::text AS clients,
       (current_setting('max_connections')::int
        - current_setting('superuser_reserved_connections')::int
        - coalesce(nullif(current_setting('reserved_connections', true), '')::int, 0))::text AS usable
  FROM pg_stat_activity
 WHERE backend_type = 'client backend'
   AND pid <> pg_backend_pid()
   AND application_name IS DISTINCT FROM 'pgdb-operator'
