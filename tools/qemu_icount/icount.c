/*
 * icount: exact guest instruction counts at marker hits, as a QEMU TCG plugin (API v1).
 *
 *   qemu-system-arm ... -plugin tools/qemu_icount/libicount.so,marker=0x10d3a,out=hits.txt
 *
 * Every executed guest instruction adds 1 to a counter (an inline op on each instruction, so
 * partially executed blocks are counted exactly). The instruction at `marker` (the entry of the
 * firmware's bench_marker function; a Thumb address may be given with bit 0 set) is the one
 * exception: instead of the inline op it gets a callback that first appends the counter to the
 * hit list and then counts itself. So hit k records the number of instructions executed before
 * the k-th call of the marker, and differences between hits are exact.
 *
 * Output (to `out`, else through qemu_plugin_outs, i.e. QEMU's log/stderr):
 *   icount total <n>
 *   icount hits <n>
 *   hit <k> <count>
 *
 * Optional profile: `profile=PATH,brackets=J0:J1` counts, per translation block, how often it
 * started while execution was inside brackets J0 .. J1-1 (bracket j = from marker hit 2j to hit
 * 2j+1) and writes lines `tb <vaddr> <n_insns> <executions>`. tools/bench_mcu.py maps them to
 * functions. (Block granularity: a block left early by an exception still counts whole; none of
 * the profiled code raises exceptions.)
 *
 * Single vCPU only (the counters are not atomic); the boards used have one core.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu-plugin-min.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

static uint64_t insn_count;
static uint64_t marker_addr = UINT64_MAX;
static uint64_t *hits;
static size_t n_hits, cap_hits;
static char out_path[4096];

struct tb_prof {
    uint64_t vaddr;
    uint64_t n_insns;
    uint64_t execs;
};
static char prof_path[4096];
static uint64_t prof_from, prof_to; /* bracket indices [from, to) */
static struct tb_prof **profs;
static size_t n_profs, cap_profs;

static void *grow(void *p, size_t *cap, size_t elem)
{
    size_t n = *cap ? 2 * *cap : 1024;
    void *q = realloc(p, n * elem);
    if (!q) {
        qemu_plugin_outs("icount: out of memory\n");
        abort();
    }
    *cap = n;
    return q;
}

static void on_tb_exec(unsigned int vcpu_index, void *userdata)
{
    (void)vcpu_index;
    /* Between hit 2j and hit 2j+1 (inside bracket j) the hit count is 2j+1, odd. */
    if (n_hits & 1) {
        uint64_t j = (n_hits - 1) / 2;
        if (j >= prof_from && j < prof_to) {
            ((struct tb_prof *)userdata)->execs++;
        }
    }
}

static void on_marker(unsigned int vcpu_index, void *userdata)
{
    (void)vcpu_index;
    (void)userdata;
    if (n_hits == cap_hits) {
        hits = grow(hits, &cap_hits, sizeof(*hits));
    }
    hits[n_hits++] = insn_count;
    insn_count++; /* the marker instruction itself */
}

static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    if (prof_path[0]) {
        struct tb_prof *p = calloc(1, sizeof(*p));
        if (!p) {
            qemu_plugin_outs("icount: out of memory\n");
            abort();
        }
        p->vaddr = qemu_plugin_tb_vaddr(tb);
        p->n_insns = n;
        if (n_profs == cap_profs) {
            profs = grow(profs, &cap_profs, sizeof(*profs));
        }
        profs[n_profs++] = p;
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_tb_exec, QEMU_PLUGIN_CB_NO_REGS, p);
    }
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        if (qemu_plugin_insn_vaddr(insn) == marker_addr) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_marker, QEMU_PLUGIN_CB_NO_REGS, NULL);
        } else {
            qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64,
                                                       &insn_count, 1);
        }
    }
}

static void on_plugin_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    FILE *f = out_path[0] ? fopen(out_path, "w") : NULL;
    char line[96];
    snprintf(line, sizeof line, "icount total %" PRIu64 "\nicount hits %zu\n", insn_count, n_hits);
    if (f) {
        fputs(line, f);
    } else {
        qemu_plugin_outs(line);
    }
    for (size_t k = 0; k < n_hits; k++) {
        snprintf(line, sizeof line, "hit %zu %" PRIu64 "\n", k, hits[k]);
        if (f) {
            fputs(line, f);
        } else {
            qemu_plugin_outs(line);
        }
    }
    if (f) {
        fclose(f);
    }
    if (prof_path[0]) {
        FILE *pf = fopen(prof_path, "w");
        if (!pf) {
            qemu_plugin_outs("icount: cannot write the profile\n");
            return;
        }
        for (size_t i = 0; i < n_profs; i++) {
            if (profs[i]->execs) {
                fprintf(pf, "tb 0x%" PRIx64 " %" PRIu64 " %" PRIu64 "\n", profs[i]->vaddr,
                        profs[i]->n_insns, profs[i]->execs);
            }
        }
        fclose(pf);
    }
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    if (info->system_emulation && info->system.max_vcpus > 1) {
        qemu_plugin_outs("icount: single vCPU only\n");
        return -1;
    }
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "marker=", 7) == 0) {
            marker_addr = strtoull(argv[i] + 7, NULL, 0);
            if (strcmp(info->target_name, "arm") == 0) {
                marker_addr &= ~(uint64_t)1; /* Thumb symbol values have bit 0 set */
            }
        } else if (strncmp(argv[i], "out=", 4) == 0) {
            snprintf(out_path, sizeof out_path, "%s", argv[i] + 4);
        } else if (strncmp(argv[i], "profile=", 8) == 0) {
            snprintf(prof_path, sizeof prof_path, "%s", argv[i] + 8);
        } else if (strncmp(argv[i], "brackets=", 9) == 0) {
            char *end = NULL;
            prof_from = strtoull(argv[i] + 9, &end, 0);
            prof_to = (end && *end == ':') ? strtoull(end + 1, NULL, 0) : prof_from + 1;
        } else {
            qemu_plugin_outs("icount: unknown argument "
                             "(marker=ADDR,out=PATH[,profile=PATH,brackets=J0:J1])\n");
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_trans);
    qemu_plugin_register_atexit_cb(id, on_plugin_exit, NULL);
    return 0;
}
