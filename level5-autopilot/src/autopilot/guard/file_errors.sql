-- The values of the configuration file this server refuses: what
-- pg_file_settings reports an error for when the file is read now (it
-- reads the file as it is, not as it was last loaded). A parameter that
-- only a restart changes reports "setting could not be applied" for any
-- new value, valid or not, so those are left out: a restart says itself
-- whether the server takes them.
SELECT f.name, f.setting, f.error
FROM pg_file_settings f
JOIN pg_settings s ON lower(s.name) = lower(f.name)
WHERE f.sourcefile = current_setting('config_file')
  AND f.error IS NOT NULL
  AND s.context <> 'postmaster'
ORDER BY f.seqno
