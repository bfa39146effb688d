-- What the collector asks a server on each measurement, in one constant
-- statement: one row per figure, every column text.
--   kind        what the row holds
--   name        the state, or the database (datname), when the figure has one
--   a, b, c, d  the figure's values
-- A primary's streaming replicas (Level 5) are named by their
-- application_name, the replica's pod; their replay lag is 0 once caught up
-- (PostgreSQL reports NULL when no WAL is waiting).
-- The operator's own sessions (application_name pgdb-operator, this one
-- included) are left out of the connections and the oldest transaction.
-- pg_stat_statements' totals (calls, execution time in ms) come in a
-- 'statements' row only when the extension is installed in this database
-- and loaded: the view is read through query_to_xml, which runs its query
-- only when the one-time condition holds, so a server without the extension
-- answers the rest of the statement all the same.
SELECT 'server' AS kind,
       NULL::text AS name,
       current_setting('server_version') AS a,
       current_setting('server_version_num') AS b,
       current_setting('max_connections') AS c,
       current_setting('superuser_reserved_connections') AS d
UNION ALL
SELECT 'connections', coalesce(state, 'unknown'), count(*)::text, NULL, NULL, NULL
  FROM pg_stat_activity
 WHERE backend_type = 'client backend'
   AND pid <> pg_backend_pid()
   AND application_name IS DISTINCT FROM 'pgdb-operator'
 GROUP BY coalesce(state, 'unknown')
UNION ALL
SELECT 'database', d.datname, s.xact_commit::text, s.xact_rollback::text,
       s.deadlocks::text, pg_database_size(d.oid)::text
  FROM pg_database d
  JOIN pg_stat_database s ON s.datid = d.oid
 WHERE NOT d.datistemplate
UNION ALL
SELECT 'oldest_transaction', NULL,
       coalesce(extract(epoch FROM max(clock_timestamp() - xact_start)), 0)::text,
       NULL, NULL, NULL
  FROM pg_stat_activity
 WHERE backend_type = 'client backend'
   AND xact_start IS NOT NULL
   AND pid <> pg_backend_pid()
   AND application_name IS DISTINCT FROM 'pgdb-operator'
UNION ALL
SELECT 'xid_age', NULL, max(age(datfrozenxid))::text, NULL, NULL, NULL
  FROM pg_database
UNION ALL
SELECT 'wal', NULL, coalesce(sum(size), 0)::text, NULL, NULL, NULL
  FROM pg_ls_waldir()
UNION ALL
SELECT 'replication', application_name,
       coalesce(extract(epoch FROM replay_lag), 0)::text, NULL, NULL, NULL
  FROM pg_stat_replication
 WHERE application_name IS NOT NULL
   AND application_name <> 'pg_basebackup'
UNION ALL
SELECT 'statements', NULL,
       (xpath('/row/c/text()', x))[1]::text,
       (xpath('/row/t/text()', x))[1]::text, NULL, NULL
  FROM (SELECT query_to_xml(
                 'SELECT sum(calls) AS c, sum(total_exec_time) AS t FROM pg_stat_statements',
                 false, true, '') AS x
         WHERE current_setting('server_version_num')::int >= 130000
           AND current_setting('shared_preload_libraries') ~ 'pg_stat_statements'
           AND EXISTS (SELECT 1 FROM pg_extension
                        WHERE extname = 'pg_stat_statements')) AS statements
