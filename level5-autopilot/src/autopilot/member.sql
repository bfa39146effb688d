SELECT
  pg_is_in_recovery()::text AS in_recovery,
  CASE WHEN pg_is_in_recovery() THEN NULL
       ELSE pg_current_wal_lsn()::text END AS current_lsn,
  pg_last_wal_receive_lsn()::text AS received_lsn,
  pg_last_wal_replay_lsn()::text AS replayed_lsn,
  CASE WHEN pg_is_in_recovery() THEN
         coalesce((SELECT received_tli FROM pg_stat_wal_receiver),
                  (SELECT timeline_id FROM pg_control_checkpoint()))::text
       ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int::text
  END AS timeline,
  (SELECT status FROM pg_stat_wal_receiver) AS receiver_status,
  (SELECT string_agg(slot_name::text, ',' ORDER BY slot_name)
     FROM pg_replication_slots WHERE slot_type = 'physical') AS slots,
  EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'streaming_replica')::text AS replication_role
