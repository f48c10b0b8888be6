/*
 * The shim's own declarations, shared by its files (VPP plugin layout):
 *   affinity.c          plugin state, startup.conf, init, main-loop entry
 *   affinity_node.c     the data node on the ip4-unicast arc, its trace
 *   affinity_control.c  the control-input node, the timer process, sending
 *   affinity_cli.c      CLI commands
 *   affinity_api.c      binary API handlers
 * The boundary with Rust is affinity_shim.h.
 */
#ifndef AFFINITY_H
#define AFFINITY_H

#include <vlib/vlib.h>
#include <vnet/vnet.h>

#include "affinity_shim.h"

typedef struct
{
  u16 msg_id_base;
  affinity_config_t cfg;
  u8 *key_file;
  u8 *disabled_actions; /* NUL-separated names */
  u8 initialised;
  u8 activity_interval_given; /* activity-report-interval-ms in startup.conf */
  u8 warm_up_given;	      /* warm-up-ms in startup.conf */
  u32 fib_source; /* fib_source_t of advertised prefixes */
} affinity_main_t;

extern affinity_main_t affinity_main;

extern vlib_node_registration_t affinity_node;
extern vlib_node_registration_t affinity_ctl_node;
extern vlib_node_registration_t affinity_process_node;

/* The node's error counters: one per Rust counter (affinity_counters.h). */
extern vlib_error_desc_t affinity_error_counters[AFFINITY_N_ERROR];

/* Turns the data node on or off on an interface's ip4-unicast arc;
   0 or a VNET_API_ERROR_*. */
int affinity_enable_disable (u32 sw_if_index, int enable);

/* Wakes the timer process to ask the core again when it is next needed
   (after a control message or a held packet moved that time earlier). Any
   thread. */
void affinity_wake_timers (vlib_main_t *vm);

#endif
