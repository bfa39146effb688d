SELECT
  pg_is_in_recovery()::text AS in_recovery,
  CASE WHEN pg_is_in_recovery() THEN NULL
       ELSE pg_current_wal_lsn()::text END AS current_lsn,
  pg_last_wal_receive_lsn()::text AS received_lsn,
  pg_last_wal_replay_lsn()::text AS replayed_lsn,
  -- A standby's timeline: the one its WAL receiver receives on, else the
  -- newest it has replayed into or is bound for. A standby pg_rewind just
  -- moved onto the primary's timeline replays its copied WAL before its
  -- receiver starts, its last checkpoint still on the old timeline; the
  -- rewind set its minimum recovery point on the primary's.
  CASE WHEN pg_is_in_recovery() THEN
         coalesce((SELECT nullif(received_tli, 0) FROM pg_stat_wal_receiver),
                  greatest((SELECT timeline_id FROM pg_control_checkpoint()),
                           (SELECT min_recovery_end_timeline FROM pg_control_recovery())))::text
       ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int::text
  END AS timeline,
  (SELECT status FROM pg_stat_wal_receiver) AS receiver_status,
  (SELECT string_agg(slot_name::text, ',' ORDER BY slot_name)
     FROM pg_replication_slots WHERE slot_type = 'physical') AS slots,
  EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'streaming_replica')::text AS replication_role
