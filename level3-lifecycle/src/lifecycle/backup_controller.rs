//! The backup controller: takes each `PostgresDBBackup` with a Job,
//! reports it in the object's status, and deletes its files before the
//! object goes.
