// depot's own start-up code for GraphiQL (not from npm). It is a file of its own, served from the
// binary like the rest, so the page's CSP can say script-src 'self' with no inline script, hash
// or nonce. GraphiQL talks to this server's /graphql only (connect-src 'self'); tokens and the
// hypi-domain header go in GraphiQL's headers editor.
'use strict';
ReactDOM.createRoot(document.getElementById('graphiql')).render(
  React.createElement(GraphiQL, {
    fetcher: GraphiQL.createFetcher({ url: '/graphql' }),
  })
);
