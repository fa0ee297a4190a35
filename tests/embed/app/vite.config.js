// Module workers (the agent starts its executors from inside a Worker).
export default { worker: { format: 'es' }, logLevel: 'warn' };
