/*
 * A flat C interface to the few Berkeley DB calls postfix-rs needs, so that
 * Rust never has to mirror the layout of BDB's DB/DB_ENV structs (their
 * methods are function pointers inside them). Compiled against the system's
 * db.h and linked with the system's libdb, as Postfix itself is.
 */
#include <db.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct pfx_bdb {
    DB_ENV *env;
    DB *db;
    DBC *cursor;
};

/* Opens FILE in directory DIR as Postfix's dict_db does: a private
 * memory-pool environment in the table's directory, DB_FCNTL_LOCKING,
 * h_nelem 4096 for hash tables. mode: 0 read, 1 create (truncate). */
int pfx_bdb_open(const char *dir, const char *file, int hash, int create,
                 unsigned cache, struct pfx_bdb **out)
{
    struct pfx_bdb *t = calloc(1, sizeof(*t));
    u_int32_t flags = DB_FCNTL_LOCKING;
    int rc;

    if (t == 0)
        return ENOMEM;
    if ((rc = db_env_create(&t->env, 0)) != 0)
        goto fail;
    if (cache && (rc = t->env->set_cachesize(t->env, 0, cache, 0)) != 0)
        goto fail;
    if ((rc = t->env->open(t->env, dir, DB_CREATE | DB_INIT_MPOOL | DB_PRIVATE, 0)) != 0)
        goto fail;
    if ((rc = db_create(&t->db, t->env, 0)) != 0)
        goto fail;
    if (hash && (rc = t->db->set_h_nelem(t->db, 4096)) != 0)
        goto fail;
    flags |= create ? (DB_CREATE | DB_TRUNCATE) : DB_RDONLY;
    if ((rc = t->db->open(t->db, 0, file, 0, hash ? DB_HASH : DB_BTREE, flags, 0644)) != 0)
        goto fail;
    *out = t;
    return 0;
fail:
    if (t->db)
        t->db->close(t->db, 0);
    if (t->env)
        t->env->close(t->env, 0);
    free(t);
    return rc;
}

/* 0 found (value points into BDB's buffer until the next call), 1 not found. */
int pfx_bdb_get(struct pfx_bdb *t, const void *key, unsigned klen,
                const void **val, unsigned *vlen)
{
    DBT k, v;
    int rc;

    memset(&k, 0, sizeof(k));
    memset(&v, 0, sizeof(v));
    k.data = (void *) key;
    k.size = klen;
    rc = t->db->get(t->db, 0, &k, &v, 0);
    if (rc == DB_NOTFOUND)
        return 1;
    if (rc == 0) {
        *val = v.data;
        *vlen = v.size;
    }
    return rc;
}

/* 0 stored, 1 the key exists already (it is kept). */
int pfx_bdb_put(struct pfx_bdb *t, const void *key, unsigned klen,
                const void *val, unsigned vlen)
{
    DBT k, v;
    int rc;

    memset(&k, 0, sizeof(k));
    memset(&v, 0, sizeof(v));
    k.data = (void *) key;
    k.size = klen;
    v.data = (void *) val;
    v.size = vlen;
    rc = t->db->put(t->db, 0, &k, &v, DB_NOOVERWRITE);
    return rc == DB_KEYEXIST ? 1 : rc;
}

/* Walks the table: 0 a record, 1 the end. */
int pfx_bdb_next(struct pfx_bdb *t, int first, const void **key, unsigned *klen,
                 const void **val, unsigned *vlen)
{
    DBT k, v;
    int rc;

    if (t->cursor == 0 && (rc = t->db->cursor(t->db, 0, &t->cursor, 0)) != 0)
        return rc;
    memset(&k, 0, sizeof(k));
    memset(&v, 0, sizeof(v));
    rc = t->cursor->get(t->cursor, &k, &v, first ? DB_FIRST : DB_NEXT);
    if (rc == DB_NOTFOUND)
        return 1;
    if (rc == 0) {
        *key = k.data;
        *klen = k.size;
        *val = v.data;
        *vlen = v.size;
    }
    return rc;
}

int pfx_bdb_fd(struct pfx_bdb *t)
{
    int fd = -1;

    return t->db->fd(t->db, &fd) == 0 ? fd : -1;
}

int pfx_bdb_close(struct pfx_bdb *t)
{
    int rc;

    if (t->cursor)
        t->cursor->close(t->cursor);
    rc = t->db->sync(t->db, 0);
    if (t->db->close(t->db, 0) != 0 && rc == 0)
        rc = -1;
    t->env->close(t->env, 0);
    free(t);
    return rc;
}

const char *pfx_bdb_strerror(int rc)
{
    return db_strerror(rc);
}
