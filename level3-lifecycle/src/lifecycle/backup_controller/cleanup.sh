set -eu
log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
fail() { printf '%s' "$*" > /dev/termination-log 2>/dev/null || true; log "FAILED: $*"; exit 1; }
RCLONE=rclone
case "$BACKUP_NAME" in
  "" | */* | . | ..) fail "backup name \"$BACKUP_NAME\" cannot name a folder; nothing deleted" ;;
esac
if [ "$DESTINATION" = volume ]; then
  case "$TARGET_DIR" in
    "$BACKUP_ROOT"/?*) ;;
    *) fail "$TARGET_DIR is not a folder of the backup volume; nothing deleted" ;;
  esac
  log "deleting $TARGET_DIR"
  out=$(rm -rf "$TARGET_DIR" 2>&1) || fail "deleting $TARGET_DIR failed: $(printf '%s' "$out" | tail -n 3 | tr '\n' ' ')"
  printf 'deleted the files of backup %s from the backup volume' "$BACKUP_NAME" > /dev/termination-log
else
  case "$S3_PATH" in
    */"$BACKUP_NAME"/) ;;
    *) fail "s3 path $S3_PATH is not the folder of backup $BACKUP_NAME; nothing deleted" ;;
  esac
  log "deleting s3://$S3_BUCKET/$S3_PATH"
  # A folder already gone is what was asked for.
  if ! out=$("$RCLONE" purge "dest:$S3_BUCKET/$S3_PATH" 2>&1); then
    case "$out" in
      *"directory not found"*) log "already gone" ;;
      *)
        said=$(printf '%s\n' "$out" | grep -m 1 ' ERROR : ' | sed 's/^.* ERROR : *:* *//')
        [ -n "$said" ] || said=$(printf '%s' "$out" | grep -v '^[[:space:]]*$' | tail -n 3 | tr '\n' ' ')
        fail "deleting s3://$S3_BUCKET/$S3_PATH failed: $said" ;;
    esac
  fi
  printf 'deleted the files of backup %s from s3://%s/%s' "$BACKUP_NAME" "$S3_BUCKET" "$S3_PATH" > /dev/termination-log
fi
