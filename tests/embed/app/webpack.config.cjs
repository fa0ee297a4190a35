// webpack 5 build of the same app: `webpack --config app/webpack.config.cjs --env out=DIR`.
const path = require('node:path');

module.exports = (env) => ({
  mode: 'production',
  context: __dirname,
  entry: './main.js',
  output: { path: env.out, filename: 'main.js', publicPath: 'auto', clean: true },
  performance: { hints: false },
});
