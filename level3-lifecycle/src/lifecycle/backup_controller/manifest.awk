# The manifest (see manifest.rs) from the records backup.sh collected, one
# per line, tab-separated:
#   F  file  bytes  sha256                 a file of the backup
#   D  database  file                      a database and its dump
#   T  database  schema  table  rows  digest   a table, as the snapshot saw it
# and the environment: BACKUP_NAME, DATABASE_NAME, SERVER_VERSION, SNAPSHOT_AT.
function str(s,   out, i, c) {
  if (s !~ /[\\"]/ && s !~ /[[:cntrl:]]/) return "\"" s "\""
  out = ""
  for (i = 1; i <= length(s); i++) {
    c = substr(s, i, 1)
    if (c == "\\") out = out "\\\\"
    else if (c == "\"") out = out "\\\""
    else if (c ~ /[[:cntrl:]]/) out = out " "
    else out = out c
  }
  return "\"" out "\""
}
# A count as the server printed it (no float conversion of large numbers).
function num(s) { return (s ~ /^[0-9]+$/) ? s : "0" }
$1 == "F" { files[++nf] = "{\"name\":" str($2) ",\"bytes\":" num($3) ",\"sha256\":" str($4) "}" }
$1 == "D" { dbs[++nd] = $2; dbfile[$2] = $3 }
$1 == "T" {
  t = "{\"schema\":" str($3) ",\"name\":" str($4) ",\"rows\":" num($5)
  if ($6 != "") t = t ",\"digest\":" str($6)
  t = t "}"
  if (ntables[$2]++) tables[$2] = tables[$2] "," t
  else tables[$2] = t
}
END {
  printf "{\"format\":1,\"backup\":%s,\"database\":%s,\"serverVersion\":%s,\"snapshotAt\":%s,\"files\":[",
    str(ENVIRON["BACKUP_NAME"]), str(ENVIRON["DATABASE_NAME"]), str(ENVIRON["SERVER_VERSION"]), str(ENVIRON["SNAPSHOT_AT"])
  for (i = 1; i <= nf; i++) printf "%s%s", (i > 1 ? "," : ""), files[i]
  printf "],\"databases\":["
  for (i = 1; i <= nd; i++) {
    d = dbs[i]
    printf "%s{\"name\":%s,\"file\":%s,\"tables\":[%s]}", (i > 1 ? "," : ""), str(d), str(dbfile[d]), tables[d]
  }
  printf "]}\n"
}
